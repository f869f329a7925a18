"""How poll follows each family of job (Job.family): one module per thing Quarry drives on Bedrock.

batch_job: a batch inference job (events and re-checks). customization_job: a model customization
job (events and re-checks; its loss curve kept). hosting: a provisioned throughput or custom model
deployment, re-checked until it is in service (Bedrock sends no events for those).
"""
