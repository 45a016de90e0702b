"""The network layer under the http, tcp, grpc and model-server checks:
connecting under a deadline and reading an HTTP exchange off the wire
(:mod:`.wire`). It is not a check and imports none.
"""
