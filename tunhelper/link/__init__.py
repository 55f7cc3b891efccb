"""The tun/tap link itself, shared by both ends: finding the device sshd or ssh
opened (:mod:`.discover`), configuring it (:mod:`.configure`, with :mod:`.bridge` for
tap ports), and holding it until it ends (:mod:`.hold`).

It sits below :mod:`tunhelper.server` and :mod:`tunhelper.client`, which both use it,
and above the platform, through which it touches the OS.
"""
