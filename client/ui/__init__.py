"""The Kivy screens: thin views over client.services. Importing this package imports Kivy."""
