"""What the app needs from the phone (camera, location), behind its own small interfaces.

plyer gives these on Android; on a desktop they raise NotImplementedError, so the desktop
gets a file chooser for photos and no track. Tests use fakes of the same interfaces.
"""
