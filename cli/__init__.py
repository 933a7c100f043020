"""The `alphafuse` command line, the one package above model, training and service.

Nothing below imports it. Each subcommand parses its arguments and calls into the package that does the
work: `train` and `evaluate` into training (cli/train.py), `serve` into service and `loadtest` into
service.loadtest (cli/serve.py); `demo` (cli/demo.py) runs training and then the service, which is why it
can only live up here.
"""
