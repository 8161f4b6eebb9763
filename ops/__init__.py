"""Operators' tools over the topics: the exception work queue, trace by id, consumer lag.

The command line (`rcmflow dlq …`, `rcmflow trace`, `rcmflow lag`) and the operations web
page call the same functions here, so no query is written twice."""
