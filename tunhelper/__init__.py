"""tunhelper: automatic addressing for OpenSSH tun/tap forwarding (``ssh -w``).

The forced command's flow is one module per step, driven by :mod:`.server.session`:
discover (:mod:`.link.discover`) -> lease (:mod:`.store`) -> configure
(:mod:`.link.configure`) -> announce (:mod:`.protocol`) -> hold (:mod:`.link.hold`,
:mod:`.server.keeper`) -> release (:mod:`.server.teardown`). Commands are listed in
:mod:`.commands`; the client is :mod:`.client`, the admin commands :mod:`.admin`. This file imports nothing on purpose: every
start of the forced command pays for what is imported here.
"""

__version__ = "0.1.0"
