"""Interoperability with other SAE libraries' on-disk formats (SAELens: :mod:`repro.interop.saelens`)."""
