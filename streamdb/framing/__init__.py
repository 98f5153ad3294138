"""Framed message streams, bit-exact with flatstream-rs (docs/design.md, section 6), and TLV.

```python
from streamdb.framing import StreamWriter, StreamReader, ChecksumFramer, ChecksumDeframer, XxHash64

with open("log.bin", "wb") as f, StreamWriter(f, ChecksumFramer(XxHash64())) as w:
    w.write(b"hello")
with open("log.bin", "rb") as f:
    for payload in StreamReader(f, ChecksumDeframer(XxHash64())).messages():
        ...  # a read-only memoryview
```

Byte layout: docs/format/framing.md. The codec (`frames`, `tlv`, `buffer`) is sans-IO;
`streams` and `aio` move the bytes.
"""

from streamdb.errors import (
    ChecksumMismatch,
    FrameTooLarge,
    FramingError,
    TailNotTorn,
    UnexpectedEof,
)
from streamdb.framing.aio import AsyncStreamReader, AsyncStreamWriter
from streamdb.framing.checksums import Checksum, Crc16, Crc32, XxHash64
from streamdb.framing.frames import (
    MAX_FRAME_LEN,
    BoundedFramer,
    ChecksumDeframer,
    ChecksumFramer,
    DefaultDeframer,
    DefaultFramer,
    FrameDecoder,
    Framer,
)
from streamdb.framing.recover import Recovery, recover
from streamdb.framing.streams import StreamReader, StreamWriter
from streamdb.framing.tlv import Tlv, TlvDecoder, TlvEncoder, encode_tlv

__all__ = [
    "MAX_FRAME_LEN",
    "AsyncStreamReader",
    "AsyncStreamWriter",
    "BoundedFramer",
    "Checksum",
    "ChecksumDeframer",
    "ChecksumFramer",
    "ChecksumMismatch",
    "Crc16",
    "Crc32",
    "DefaultDeframer",
    "DefaultFramer",
    "FrameDecoder",
    "FrameTooLarge",
    "Framer",
    "FramingError",
    "Recovery",
    "StreamReader",
    "StreamWriter",
    "TailNotTorn",
    "Tlv",
    "TlvDecoder",
    "TlvEncoder",
    "UnexpectedEof",
    "XxHash64",
    "encode_tlv",
    "recover",
]
