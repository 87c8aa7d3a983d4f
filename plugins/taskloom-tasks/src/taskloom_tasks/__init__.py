"""taskloom-tasks: judging and generation tasks, registered through the ``tasks`` entry point.

Import the classes from their modules (``taskloom_tasks.ultrafeedback.UltraFeedback``), or by
name through ``taskloom.get_task("ultrafeedback", ...)``.
"""
