"""``edge doctor``: the checks a field technician runs before starting the service.

Each check says OK or FAIL and, when it fails, one line saying what to do. The
checks look at the box as the service will see it: the watch folder and the
state directory are tried with the service user's permissions
(:mod:`~edge.tools.doctor.folders`), the engine checks run as that user
(:mod:`~edge.tools.doctor.account`), the broker is really connected to, TLS handshake
and login included (:mod:`~edge.tools.doctor.broker`), the engine is verified file by
file and run on its own self-test set on the backend that will serve it
(:mod:`~edge.tools.doctor.engine`), and the GPU, its driver and TensorRT are looked
for (:mod:`~edge.tools.doctor.gpu`). :mod:`~edge.tools.doctor.checks` runs them in order.
"""
