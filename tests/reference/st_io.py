"""Minimal safetensors reader/writer for the reference tests (no `safetensors` package: torch + stdlib only)."""
import json
import struct

import torch

_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "I64": torch.int64,
           "I32": torch.int32, "F64": torch.float64, "U8": torch.uint8, "I8": torch.int8, "BOOL": torch.bool}
_NAMES = {v: k for k, v in _DTYPES.items()}


def save(path, tensors, metadata=None):
    """Write {name: tensor} in safetensors layout (little-endian, contiguous, header padded to 8 bytes)."""
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for name, t in tensors.items():
        t = t.detach().contiguous().cpu()
        # bytes via a uint8 view keeps bf16 exact (numpy has no bf16)
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": _NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    with open(path, "wb") as f:
        f.write(header_bytes(header))
        for b in blobs:
            f.write(b)


def header_bytes(header):
    """The 8-byte length and the JSON header, padded with spaces to a multiple of 8 as the format asks; the tensors'
    bytes follow, in the order of their data_offsets."""
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text


def read_header(f):
    """The header of a safetensors file open at its start: ({name: {dtype, shape, data_offsets}} without
    __metadata__, the file offset the data_offsets count from)."""
    (n,) = struct.unpack("<Q", f.read(8))
    header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return header, 8 + n


def load(path):
    with open(path, "rb") as f:
        header, _ = read_header(f)
        data = f.read()
    out = {}
    for name, e in header.items():
        b, end = e["data_offsets"]
        buf = bytearray(data[b:end])
        dtype = _DTYPES[e["dtype"]]
        t = torch.frombuffer(buf, dtype=torch.uint8) if buf else torch.empty(0, dtype=torch.uint8)
        out[name] = t.view(dtype).reshape(e["shape"]).clone()
    return out
