"""Turning records into token sequences and row metadata: prompts, GT samples, FN fragments.

Everything that decides *which token is what* for teacher forcing lives here and in
`coordexp.core.tokens`; the stages only call these functions.
"""
