"""Export: ONNX with parity checks, compilers behind one pipeline (TVM, TensorRT checks), deploy bundles."""
