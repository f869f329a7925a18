"""The only code that talks to AWS. Each adapter turns botocore's errors into shared.errors."""
