"""TMR Kit library."""
