"""Example task types of an e-commerce system: notifications, payments, reports."""
