"""DICOM defined terms a reason may quote: values from a closed set, never free text.

:func:`edge.common.privacy.closed` quotes a value only when it is one of these; any
other value (a misfiled patient name) is named by its attribute alone.
"""

from __future__ import annotations

from pydicom.uid import UID

_MODALITY_TERMS = (
    "AR ASMT AU BDUS BI BMD CR CT CTPROTOCOL DG DOC DX ECG EEG EMG EOG EPS ES FID GM HC HD "
    "IO IOL IVOCT IVUS KER KO LEN LS MG MR M3D NM OAM OCT OP OPM OPT OPTBSV OPTENF OPV OSS "
    "OT PA PLAN POS PR PT PX REG RESP RF RG RTDOSE RTIMAGE RTINTENT RTPLAN RTRAD RTRECORD "
    "RTSEGANN RTSTRUCT RWV SEG SM SMR SR SRF STAIN TEXTUREMAP TG US VA XA XAPROTOCOL XC "
    "CD DD DM DS EC FA FS LP MA MS OPR ST VF"
)
MODALITIES = frozenset(_MODALITY_TERMS.split())
#: Photometric Interpretation defined terms (PS3.3 C.7.6.3.1.2), current and retired
PHOTOMETRIC_INTERPRETATIONS = frozenset(
    {
        "MONOCHROME1",
        "MONOCHROME2",
        "PALETTE COLOR",
        "RGB",
        "YBR_FULL",
        "YBR_FULL_422",
        "YBR_PARTIAL_422",
        "YBR_PARTIAL_420",
        "YBR_ICT",
        "YBR_RCT",
        "XYB",
        "HSV",
        "ARGB",
        "CMYK",
    }
)


def uid_name(uid: str, what: str = "transfer syntax") -> str:
    """The name DICOM gives ``uid`` (PS3.6 Annex A), else a phrase that does not quote it."""
    name = UID(uid).name  # the UID itself when DICOM does not name it
    return f"{name} ({uid})" if uid and name != uid else f"an unrecognised {what}"
