"""The network layer under the http, tcp, grpc and model-server checks:
connecting under a deadline (:mod:`.connect`), URLs and request headers as
options, with what output may show of them (:mod:`.url`), one HTTP exchange
with its redirects and timing (:mod:`.http`), and the HTTP/1.1 exchange read
off the socket (:mod:`.wire`). It is not a check and imports none.
"""
