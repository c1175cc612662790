"""The trainer service: LoRA DPO (actor) and SFT/RFT (refiner) jobs, and the artifact store."""
