"""tunhelper: automatic addressing for OpenSSH tun/tap forwarding (``ssh -w``).

The forced command's flow is one module per step:
:mod:`discover` -> :mod:`lease` -> :mod:`configure` -> :mod:`announce` -> :mod:`hold`,
then release, driven by :mod:`session`. This file imports nothing on purpose: every
start of the forced command pays for what is imported here.
"""

__version__ = "0.1.0"
