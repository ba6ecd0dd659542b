"""Generated gRPC code: messages (`*_pb2.py`, typed by `*_pb2.pyi`) and stubs
(`*_pb2_grpc.py`) for the services in proto/instock/rpc/. `make proto` (and every make target
that needs them) builds them with grpcio-tools; they are never committed. The adapters that use
them are each context's `grpc.py`; the shared plumbing is `instock.platform.rpc`."""
