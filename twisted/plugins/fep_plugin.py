"""twistd plugin: `twistd -n fep --config etc/fep.ini` runs the fep daemon."""

from __future__ import annotations

from typing import Any

from twisted.application.service import IServiceMaker
from twisted.plugin import IPlugin
from twisted.python import usage
from zope.interface import implementer


class Options(usage.Options):
    optParameters = [
        ["config", "c", "etc/fep.ini", "the fep configuration file (ini)"],
    ]


@implementer(IServiceMaker, IPlugin)
class FepServiceMaker:
    tapname = "fep"
    description = "fep: front-end processor for smart-meter head-end systems"
    options = Options

    def makeService(self, options: Options) -> Any:
        # Imported here: twistd imports every plugin just to list them.
        import sys

        from fep.config import load_config
        from fep.errors import ConfigError
        from fep.service import make_service, tune_garbage_collector

        try:
            config = load_config(options["config"])
        except ConfigError as e:
            print(f"fep: {e}", file=sys.stderr)
            raise SystemExit(2) from None
        tune_garbage_collector()
        return make_service(config)


serviceMaker = FepServiceMaker()
