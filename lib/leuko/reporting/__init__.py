"""What readers see: the compare report's tables, the HTML render, and the README/docs blocks
(``results_docs``, which no stage depends on). The top layer."""
