"""One package per screen (mode); each holds the screen and the widgets only it uses."""
