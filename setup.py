# setuptools needs setup.py only to hand cffi its build hook (cffi_modules);
# all metadata lives in pyproject.toml.
from setuptools import setup

setup(cffi_modules=["native/build.py:ffibuilder"])
