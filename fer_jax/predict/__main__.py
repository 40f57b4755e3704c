"""`python -m fer_jax.predict`: see cli.py."""

from fer_jax.predict import cli

if __name__ == '__main__':
  cli.main()
