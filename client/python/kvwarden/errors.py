"""The one exception type of the kvwarden client."""

import grpc


class KvwardenError(Exception):
    """A call the daemon (or the transport) refused.

    code: a grpc.StatusCode (e.g. grpc.StatusCode.NOT_FOUND); message: the daemon's own
    one-line message, e.g. "tenant 'alpha' is at its limit max_sequences = 5 ...".
    """

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message

    @staticmethod
    def from_code(value: int, message: str) -> "KvwardenError":
        """From a google.rpc.Code number (the attach socket's answers carry one)."""
        code = next((c for c in grpc.StatusCode if c.value[0] == value), grpc.StatusCode.UNKNOWN)
        return KvwardenError(code, message)

    @staticmethod
    def from_rpc(err: grpc.RpcError) -> "KvwardenError":
        code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
        details = err.details() if hasattr(err, "details") else str(err)
        return KvwardenError(code or grpc.StatusCode.UNKNOWN, details or "")
