"""The LLM-Config-Manager server: storage, policy, encryption and the REST and gRPC APIs.

gRPC's I/O engine is chosen here, before anything in the server imports ``grpc`` (the core
reads ``GRPC_EXPERIMENTS`` once, when ``grpc`` is first imported; later changes are ignored).
The server turns off the EventEngine listener, so accepted connections go through the core's
classic epoll engine: fanning one event out to 1,000 watch streams cost about 205 µs of CPU
per stream with the EventEngine listener and about 155 µs without (a bare ``grpc.aio``
server writing pre-built bytes, grpcio 1.85, 2 cores; ``bench/propagation.py`` shows it end
to end). An operator's own ``GRPC_EXPERIMENTS`` wins.
"""

import os

GRPC_EXPERIMENTS = "-event_engine_listener"

os.environ.setdefault("GRPC_EXPERIMENTS", GRPC_EXPERIMENTS)
