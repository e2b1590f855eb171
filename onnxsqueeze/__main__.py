from onnxsqueeze.cli.app import main

main()
