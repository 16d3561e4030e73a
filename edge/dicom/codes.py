"""The coded concepts of a Mammography CAD SR (PS3.16 TID 4000 and its sub-templates).

Each is a :class:`pydicom.sr.coding.Code` from pydicom's copy of the DICOM
content mapping resource, so a value and its meaning never drift apart; the
meanings lose the zero-width spaces the standard's HTML carries.
"""

from __future__ import annotations

from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code


def _plain(code: Code) -> Code:
    return Code(code.value, code.scheme_designator, code.meaning.replace("\u200b", ""))


DCM = codes.DCM
SCT = codes.SCT

#: TID 4000 row 1: the document's root container
MAMMOGRAPHY_CAD_REPORT = _plain(DCM.MammographyCADReport)
#: TID 1204: the language of the content
LANGUAGE = _plain(DCM.LanguageOfContentItemAndDescendants)
ENGLISH = Code("en-US", "RFC5646", "English (United States)")
IMAGE_LIBRARY = _plain(DCM.ImageLibrary)

# TID 4020, the image library entry's acquisition context
IMAGE_LATERALITY = _plain(DCM.ImageLaterality)
IMAGE_VIEW = _plain(DCM.ImageView)
PATIENT_ORIENTATION_ROW = _plain(DCM.PatientOrientationRow)
PATIENT_ORIENTATION_COLUMN = _plain(DCM.PatientOrientationColumn)
STUDY_DATE = _plain(DCM.StudyDate)
STUDY_TIME = _plain(DCM.StudyTime)
CONTENT_DATE = _plain(DCM.ContentDate)
CONTENT_TIME = _plain(DCM.ContentTime)
HORIZONTAL_PIXEL_SPACING = _plain(DCM.HorizontalPixelSpacing)
VERTICAL_PIXEL_SPACING = _plain(DCM.VerticalPixelSpacing)

#: CID 6022 "Side" and CID 4014 "View for Mammography"
BREAST = {"L": _plain(SCT.LeftBreast), "R": _plain(SCT.RightBreast)}
VIEWS = {
    "CC": _plain(SCT.CranioCaudal),
    "MLO": _plain(SCT.MedioLateralObliqueProjection),
    "ML": _plain(SCT.MedioLateralProjection),
    "LM": _plain(SCT.LateroMedial),
    "LMO": _plain(SCT.LateroMedialOblique),
    "XCCL": _plain(SCT.CranioCaudalExaggeratedLaterally),
    "XCCM": _plain(SCT.CranioCaudalExaggeratedMedially),
    "FB": _plain(SCT.CaudoCranial),
    "SIO": _plain(SCT.SuperolateralToInferomedialOblique),
    "ISO": _plain(SCT.InferomedialToSuperolateralOblique),
}

# TID 4001 / CID 6047: CAD Processing and Findings Summary
PROCESSING_SUMMARY = _plain(DCM.CADProcessingAndFindingsSummary)
ALL_SUCCEEDED_WITHOUT_FINDINGS = _plain(DCM.AllAlgorithmsSucceededWithoutFindings)
ALL_SUCCEEDED_WITH_FINDINGS = _plain(DCM.AllAlgorithmsSucceededWithFindings)
NOT_ALL_SUCCEEDED_WITHOUT_FINDINGS = _plain(DCM.NotAllAlgorithmsSucceededWithoutFindings)
NOT_ALL_SUCCEEDED_WITH_FINDINGS = _plain(DCM.NotAllAlgorithmsSucceededWithFindings)

# TID 4002 / 4003 / 4006: impressions and findings
IMPRESSION_DESCRIPTION = _plain(DCM.ImpressionDescription)
CERTAINTY_OF_IMPRESSION = _plain(DCM.CertaintyOfImpression)
INDIVIDUAL_IMPRESSION = _plain(DCM.IndividualImpressionRecommendation)
RENDERING_INTENT = _plain(DCM.RenderingIntent)
PRESENTATION_REQUIRED = _plain(DCM.PresentationRequiredRenderingDeviceIsExpectedToPresent)
SINGLE_IMAGE_FINDING = _plain(DCM.SingleImageFinding)
#: CID 6014: the engine marks a suspicious region without saying what it is
SELECTED_REGION = _plain(DCM.SelectedRegion)
CERTAINTY_OF_FINDING = _plain(DCM.CertaintyOfFinding)
CENTER = _plain(DCM.Center)
OUTLINE = _plain(DCM.Outline)

# TID 4019: Algorithm Identification
ALGORITHM_NAME = _plain(DCM.AlgorithmName)
ALGORITHM_VERSION = _plain(DCM.AlgorithmVersion)
ALGORITHM_PARAMETERS = _plain(DCM.AlgorithmParameters)

# TID 4000 rows 6-13, TID 4015-4018 / CID 6042: what was attempted, and how it went
SUMMARY_OF_DETECTIONS = _plain(DCM.SummaryOfDetections)
SUMMARY_OF_ANALYSES = _plain(DCM.SummaryOfAnalyses)
SUCCESSFUL_DETECTIONS = _plain(DCM.SuccessfulDetections)
SUCCESSFUL_ANALYSES = _plain(DCM.SuccessfulAnalyses)
DETECTION_PERFORMED = _plain(DCM.DetectionPerformed)
ANALYSIS_PERFORMED = _plain(DCM.AnalysisPerformed)
OVERALL_ANALYSIS = _plain(DCM.OverallImpressionRecommendationAnalysis)
SUCCEEDED = _plain(DCM.Succeeded)
PARTIALLY_SUCCEEDED = _plain(DCM.PartiallySucceeded)

# Units (UCUM)
PERCENT = _plain(codes.UCUM.Percent)
MILLIMETRE = Code("mm", "UCUM", "millimeter")
