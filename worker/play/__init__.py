"""Live play sessions (`worldplay play`): the session loop in the work horse and the chunk sources it drives."""
