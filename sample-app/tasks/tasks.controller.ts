import { BadRequestException, Controller, DefaultValuePipe, Get, ParseIntPipe, Query } from '@nestjs/common';
import { RequestTimeout } from 'nestjs-cancellation';
import { TasksService } from './tasks.service.js';
import type { LongTaskResult } from './tasks.service.js';

@Controller()
export class TasksController {
  constructor(private readonly tasks: TasksService) {}

  /**
   * `GET /long-task?steps=10` (1 to 60): works one second per step, then answers. Hang up, or stop the server, and
   * the log shows the task stop at once, with the reason.
   */
  @Get('long-task')
  // The module's 30 s default is too short for a task of up to 60 steps: this route gets 65 s.
  @RequestTimeout(65_000)
  longTask(@Query('steps', new DefaultValuePipe(10), ParseIntPipe) steps: number): Promise<LongTaskResult> {
    if (steps < 1 || steps > 60) throw new BadRequestException('steps must be from 1 to 60');
    return this.tasks.runLongTask(steps);
  }
}
