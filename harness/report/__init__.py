"""Reports of a migration run: the JSON result file, the PNG picture, the terminal table.

All three render the same typed records (``harness.report.model``), which the
check fills from its evidence; pytest's own --junitxml covers JUnit. Import the
submodule you need (``chart``, ``json_report``, ``table``, ``model``): the
package imports nothing itself, so a command that never draws a picture never
pays for matplotlib.
"""
