"""The app's domain: plain Python, no Kivy. Screens call these; tests call them without a window."""
