"""A real Apache Kafka for the tests that Tansu cannot run (idempotent and transactional
producers, so Faust's exactly_once): pom.xml names the jars, fetch.py caches them, server.py
runs the broker, fixtures.py has the session fixture ``apache_kafka``."""
