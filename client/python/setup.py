"""Builds the package with its protobuf/gRPC modules generated from ../../proto by
protoc and grpc_python_plugin (Debian: protobuf-compiler, protobuf-compiler-grpc)."""

import os
import shutil
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_ROOT = os.path.join(HERE, "..", "..", "proto")
PROTOS = ["options", "layout", "policy", "config", "cluster", "control", "admin", "transfer", "peer"]


class BuildWithStubs(build_py):
    def run(self):
        super().run()
        protoc = shutil.which("protoc")
        plugin = shutil.which("grpc_python_plugin")
        if protoc is None or plugin is None:
            raise RuntimeError("kvwarden needs protoc and grpc_python_plugin to build "
                               "(apt-get install protobuf-compiler protobuf-compiler-grpc)")
        subprocess.check_call(
            [protoc, f"--proto_path={PROTO_ROOT}", f"--python_out={self.build_lib}",
             f"--grpc_python_out={self.build_lib}", f"--plugin=protoc-gen-grpc_python={plugin}"]
            + [f"kvwarden/v1/{p}.proto" for p in PROTOS])


setup(cmdclass={"build_py": BuildWithStubs})
