"""The presentation contexts the receiver accepts: mammography images, as ingest decodes them.

A sender proposes, per SOP class, the transfer syntaxes it can send; the receiver
accepts the first of them that is listed here (the sender's preference), and the
data set is stored exactly as it was sent: nothing is transcoded on the way in.
"""

from __future__ import annotations

from pydicom.uid import UID

from edge.pipeline.decode import FAMILIES, NATIVE

#: the image storage SOP classes a mammography unit or PACS sends (PS3.4 B.5); ingest
#: skips For Processing and tomosynthesis objects unless the engine accepts them, and
#: a Secondary Capture of another modality than MG, each with a counted reason
STORAGE_SOP_CLASSES: dict[str, UID] = {
    "Digital Mammography X-Ray Image Storage - For Presentation": UID(
        "1.2.840.10008.5.1.4.1.1.1.2"
    ),
    "Digital Mammography X-Ray Image Storage - For Processing": UID(
        "1.2.840.10008.5.1.4.1.1.1.2.1"
    ),
    "Secondary Capture Image Storage": UID("1.2.840.10008.5.1.4.1.1.7"),
    "Breast Tomosynthesis Image Storage": UID("1.2.840.10008.5.1.4.1.1.13.1.3"),
    "Breast Projection X-Ray Image Storage - For Presentation": UID(
        "1.2.840.10008.5.1.4.1.1.13.1.4"
    ),
    "Breast Projection X-Ray Image Storage - For Processing": UID("1.2.840.10008.5.1.4.1.1.13.1.5"),
}

#: Verification SOP Class: C-ECHO (PS3.4 A.4)
VERIFICATION = UID("1.2.840.10008.1.1")

#: every transfer syntax the decoders of :mod:`edge.pipeline.decode` read (docs/ingest.md):
#: the native ones, then each one of a codestream family, taken from the decoder itself
#: so that the receiver never accepts what ingest cannot read, nor refuses what it can
TRANSFER_SYNTAXES: tuple[UID, ...] = (*sorted(NATIVE), *(UID(uid) for uid in FAMILIES))
