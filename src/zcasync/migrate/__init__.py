"""Moving a zc.async 1.x database to zcasync (``zcasync migrate``)."""
