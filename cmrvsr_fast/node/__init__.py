"""The DICOM node (`cmrvsr-fast serve`): receive cines over the network, super-resolve them, send the derived
series on. Needs pynetdicom (`pip install cmrvsr_fast[node]`); docs/dicom-node.md."""
