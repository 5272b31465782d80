"""Android entry point: python-for-android starts main.py at the top of the source tree."""

from client.__main__ import main

main()
