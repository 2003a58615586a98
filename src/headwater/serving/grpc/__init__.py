"""gRPC: the Open Inference Protocol's ``GRPCInferenceService`` and headwater's own
``Predictions.Predict``, with the standard health service, beside the HTTP server."""
