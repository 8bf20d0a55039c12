from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="da-toolkit",
    version="0.1.0",
    description="Domain adaptation of image classifiers: CycleGAN, DANN and ADDA on one timm classifier",
    long_description=Path(__file__).with_name("README.md").read_text(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["da_toolkit", "da_toolkit.*"]),
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.1",
        "torchvision>=0.16",
        "timm>=0.9",
        "scikit-learn>=1.2",
        "tensorboard>=2.12",
        "pillow>=10.1",
        "click>=8.0",
        "pyyaml>=6.0",
        "tqdm>=4.60",
        "matplotlib>=3.6",
        "submitit>=1.5",
    ],
    extras_require={"test": ["pytest>=7", "pytest-xdist>=3", "hypothesis>=6"]},
    entry_points={"console_scripts": ["da-toolkit=da_toolkit.cli:main"]},
)
