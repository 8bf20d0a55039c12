"""The photo benchmarks (Office-31, Office-Home, VisDA-2017, DomainNet) as list-file domains: registered here."""

PHOTO_DATASETS: tuple[str, ...] = ()  # the names registered here
