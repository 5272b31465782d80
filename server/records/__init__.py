"""Records: the one write path (``writes``) and the pull feed (``feed``)."""
