"""The edgetune fleet: a Flower ServerApp and ClientApp over devices running `edgetune serve`."""
