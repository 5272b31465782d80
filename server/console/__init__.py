"""The web console: supervisors review synced logs and run the closed loop; administrators manage
users, grids and devices. Server-rendered pages under ``/console/``, Chinese first, English second."""

from server.console.plugin import ConsolePlugin, console_routes

__all__ = ["ConsolePlugin", "console_routes"]
