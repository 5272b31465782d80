"""Users, grids and who works in which grid."""
