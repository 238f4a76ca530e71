"""GPT-2's byte-level alphabet (bytes_to_unicode), shared by the scripts that write test tokenizers."""


def bytes_to_unicode():
    """Printable bytes map to themselves, the other bytes to U+0100.. in order: {byte: one-character str}."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}
