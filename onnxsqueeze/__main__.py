from onnxsqueeze.cli import main

main()
