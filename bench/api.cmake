# HTTP layer: request latency over keep-alive (HttpClient and raw socket), parser and router costs.
uw_benchmark(NAME api_benchmark
  SRCS api_benchmark.cc
  DEPS uw::api uw_ext_http_parser
  SHORT_ARGS --benchmark_min_time=0.05)
