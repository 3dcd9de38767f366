"""kvwarden.harness: a real model decoding through kvwardend, and the tools that measure it.

Needs torch (and matplotlib for kvw-quality's plot): `pip install client/python[harness]`,
or Debian's python3-torch and python3-matplotlib. The client itself (the `kvwarden`
package) needs only grpcio, protobuf and numpy.

- llama: loader, tokenizer and a torch forward of a Llama-2-architecture model whose
  attention goes through a cache;
- cache: the cache protocol and the in-memory baseline; daemon_cache.KvwardenCache follows
  kvwardend, reference.ReferenceCache applies each policy in process;
- generate (python -m kvwarden.harness.generate) and quality (kvw-quality).
"""
