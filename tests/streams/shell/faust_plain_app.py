"""A Faust app with Faust's defaults (leader election on, topics declared by Faust), for the
faust-streaming #667 check: `python tests/streams/shell/faust_plain_app.py worker -l info` with
BROKER (kafka://host:port) and OUT (a file where it writes how many records it consumed)."""

from __future__ import annotations

import os
from pathlib import Path

import faust

APP_ID = "faustprobe"
TOPIC = "faust.probe"

app = faust.App(APP_ID, broker=os.environ.get("BROKER", "kafka://127.0.0.1:9092"),
                store="memory://", web_enabled=False, topic_partitions=1)
topic = app.topic(TOPIC, value_type=bytes, value_serializer="raw", partitions=1)
out = Path(os.environ.get("OUT", "faust-probe.count"))


@app.agent(topic)
async def count(stream: faust.StreamT[bytes]) -> None:
    consumed = 0
    async for _ in stream:
        consumed += 1
        out.write_text(str(consumed))


if __name__ == "__main__":
    app.main()
