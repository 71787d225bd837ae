"""The Jinja2 report: formatting filters, views (tables from the summary), figures, and rendering."""
