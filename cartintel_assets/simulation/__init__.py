"""The simulated storefront: landing files and the ground truth the tests check against."""
