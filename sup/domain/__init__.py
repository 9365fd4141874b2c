"""Domain services: the rules of SUP. No HTTP here; backends arrive as arguments."""
