"""Developer tools around the compiler: verification against onnxruntime (verify.py), fused
vs unfused reports (fusion_report.py, html_report.py), benchmarks (bench.py), kernel
profiles (profiling.py), the operator table (ops.py) and the fuzzer (fuzz/)."""
